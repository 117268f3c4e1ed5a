"""The operator API (/v1/admin): what the `datalab admin` commands do, over HTTP, for operators.

One router of its own, so that every route shares the one operator dependency (401 without
credentials, 403 `operator_required` for anyone else) and one place lists what operators can do. It
holds no logic: the handlers call the domain services (accounts, exports, students) that the commands
call, and those services raise their own domain errors and record the audit trail.
"""
