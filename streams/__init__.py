"""The streaming half of leadflow: the pure core, the Faust app and its agents, the replay driver."""
