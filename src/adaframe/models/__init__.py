"""The networks: the recurrent agents' contract and the agents, the baselines, the global memory."""
