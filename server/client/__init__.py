"""The `htk` commands that talk to a running htk over its REST API
(`htk processes ...`, `htk tasks ...`): no database, no embedded PostgreSQL;
of the server, only the domain's word lists (statuses, update types)."""
