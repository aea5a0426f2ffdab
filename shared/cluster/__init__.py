"""What several machines share: PostgreSQL's notifications and leader election, Redis."""
