"""Redis coordination primitives shared by every instance: rate limits, semaphores, circuit state, leases.

Redis is for coordination only and may lose data; the database is the record.
"""
