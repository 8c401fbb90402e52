"""The kernel: the machinery every capability runs on, knowing no feature (the unit of work,
outbox, inbox, handler kinds, consumer and relay cores, broker and Redis links, process
plumbing)."""
