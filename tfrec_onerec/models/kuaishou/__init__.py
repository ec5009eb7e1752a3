"""Kuaishou-era ranking papers: GPSVI (group-prior variational inference for tail users)."""
