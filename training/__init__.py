"""RL training: glue that joins environments and agents, beside the runner.

``env_adapter.py`` exposes any valuegym environment to RLlib (focal seats learn, background
seats play inside, seated by :mod:`valuegym.runner.seats`); ``train.py`` is ``valuegym train``.
What a trained module needs to *play* (the module, observation encoding, the checkpoint-backed
policy) stays in :mod:`valuegym.agents.rl`.
"""
