"""Kuaishou-era ranking papers: GPSVI (group-prior variational inference for tail users), EMER
(end-to-end multi-objective ensemble ranking over a request's candidates), LSIR (a learned social
graph for inactive users)."""
