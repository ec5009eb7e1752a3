"""Kuaishou-era ranking papers: GPSVI (group-prior variational inference for tail users), EMER
(end-to-end multi-objective ensemble ranking over a request's candidates), LSIR (a learned social
graph for inactive users), WatchTimeMARL (MMRF: multi-agent actor-critics for a session's watch
time, with a user model for the items the log never showed)."""
