"""The reinforcement learning: the one rollout of every agent, the rewards, the training losses."""
