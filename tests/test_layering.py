"""The apps' layering: tickets owns the domain and imports neither outbound channel; bots (Telegram) and
realtime (WebSockets) meet only through the hooks tickets owns (tickets.hooks); ops (health, housekeeping,
the task worker) sits above them all and nothing imports it. Its task queue backend (ops.task_backend) is
named by settings.TASKS: bots enqueue through django-tasks, never through ops."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "tickets": {"bots", "realtime", "ops"},
    "bots": {"realtime", "ops"},
    "realtime": {"bots", "ops"},
}


def imported_apps(path):
    """The top-level packages ``path`` imports, wherever the import statement is (lazy imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_an_app_imports_none_of_the_apps_it_must_not_know(app):
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in sorted((ROOT / app).rglob("*.py"))
        for imported, line in imported_apps(path)
        if imported in FORBIDDEN[app]
    ]
    assert not offences, "\n".join(offences)


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def later():\n    from bots.tasks import deliver_reply\n")

    assert ("bots", 2) in list(imported_apps(module))
