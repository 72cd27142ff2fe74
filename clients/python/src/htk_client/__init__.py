"""The Python client of the htk process-tracking API, over REST:

```python
from htk_client import HtkClient

with HtkClient("http://localhost:8080", token) as htk:
    process = htk.processes.get(process_id)
    for message in htk.processes.watch(process_id):
        ...
```

It also holds the `htk` command's network commands (`htk processes`,
`htk tasks`); the server adds `htk run` and `htk token` where it is installed.
"""

from htk_client.client import HtkClient, Processes, Tasks
from htk_client.rest import ApiError, Unreachable

__all__ = ["ApiError", "HtkClient", "Processes", "Tasks", "Unreachable"]
