"""The paths of the webhook's baselines (bench.views), shared by the bench's URLconf, its ASGI application and
its workloads: the same one-INSERT view served three ways."""

# Through Django's request cycle with no middleware: the least any Django view costs (the webhook's goal).
BARE_PATH = "/bench/insert/"
# Answered in front of Django's request cycle, as the webhook is (supportsite.machine_requests).
BARE_IN_FRONT_PATH = "/bench/insert-in-front/"
# Through Django's request cycle and the browser middleware, as every view was served at first.
BARE_BEHIND_MIDDLEWARE_PATH = "/bench/insert-behind-middleware/"
