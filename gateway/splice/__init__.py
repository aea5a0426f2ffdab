"""Body surgery: where a value sits in a request body, so the proxy can change it in place."""
