"""The model server (``mlyard serve``): FastAPI and uvicorn, from the optional ``serve`` extra."""

from mlyard.extras import require_extra

require_extra("serve", needed_by="The model server (mlyard serve)")
