"""The operator API: administering organizations, users, API keys, exports and students over HTTP."""
