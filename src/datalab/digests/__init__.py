"""E-mail digests: the exports published to an organization, mailed to its users once per period."""
