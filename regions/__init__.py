"""Multi-region: local clusters with MirrorMaker 2 between them, heartbeats, replication lag,
health, failover verdicts and geographic routing (issue #10)."""
