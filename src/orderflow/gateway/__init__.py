"""The payment gateway: a payment provider simulator run as a service of its own
(``orderflow gateway``). The worker reaches it over HTTP as it would a real provider; it keeps
its own ledger and idempotency keys in a PostgreSQL schema of its own, and tells the API of
asynchronous outcomes by signed webhooks. Nothing in the order system imports it."""
