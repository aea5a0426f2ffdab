"""What hosts own and may set: model names (claims, co-hosts) and the limits on their
servers' weight and priority."""
