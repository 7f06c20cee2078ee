"""The paths of the webhook's baselines (bench.views), shared by the bench's URLconf and its workloads."""

BARE_PATH = "/bench/insert/"
BARE_BEHIND_MIDDLEWARE_PATH = "/bench/insert-behind-middleware/"
