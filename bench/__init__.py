"""The benchmarks of SPEC §5 (``make bench``): the real stack, started and measured by ``python -m bench``.

Nothing here is imported by the product. ``bench.settings`` extends ``supportsite.settings`` with the bench's
own views (a bare INSERT view and a bare Channels relay, the baselines every figure is a ratio of) and a
probe that notes when each event's broadcast starts. See docs/performance.md.
"""
