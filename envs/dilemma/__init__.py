"""Dilemmas written in YAML: any number of agents choose between options that uphold or violate values.

A PettingZoo ``ParallelEnv`` for researchers' own value dilemmas, in the spirit of DailyDilemmas
(Chiu et al. 2024, arXiv:2410.02683): a *dilemma set* is data (:class:`DilemmaSet`), written inline
in a scenario (``dilemma_set``) or in its own YAML file (``dilemma_file``)::

    values: [honesty, loyalty, care]          # the vocabulary every option draws on
    dilemmas:
      - id: borrowed_car
        situation: Your closest friend borrowed your car ...
        options:
          - id: tell_truth
            text: Tell the neighbour your friend was driving.
            upholds: [honesty]
            violates: [loyalty]
            consequence: Your friend will have to pay for the repair.   # optional
          - id: cover
            text: Say you were driving and pay yourself.
            upholds: [loyalty]
            violates: [honesty]

Turn structure. An episode is ``dilemmas_per_episode`` dilemmas of the set (all by default; in
the file's order, or a seeded random selection and order with ``shuffle_dilemmas``). Each dilemma
takes ``1 + deliberation_rounds`` steps: every agent chooses; in each deliberation round every
agent sees every agent's choice (and message) of the previous round and chooses again. Only the
last round is *binding*: it produces the moral events and rewards. The options are presented in
the file's order, or in a seeded random order per dilemma with ``shuffle_options`` (the same for
every agent; recorded as ``presented`` in the ``choices`` dataset).

Actions: ``Discrete(max_options + 1)``: index ``i < max_options`` chooses the option presented at
position ``i`` (masked where the dilemma has fewer options), the last index refuses to choose
(masked unless ``allow_refusal``). ``step`` also accepts the structured action
``{"choice": <option id | "refuse">}`` (plus ``"message"`` to the others when there are
deliberation rounds; see :meth:`DilemmaEnv.action_schema`). A choice that is not an option of the
current dilemma, or anything else that is not an action, is recorded ``invalid``: it chooses
nothing and produces no event.

Moral events (``infos[agent]["events"]``) carry the values at stake, mapped onto the shared
vocabulary of ``envs/spec.py``:

* the binding choice of an option that upholds values -> ``prosocial`` with
  ``values = ["+v", ...]`` (the option's ``upholds``);
* the binding choice of an option that violates values -> ``transgression`` with
  ``values = ["-v", ...]`` (the option's ``violates``);
  (an option that does both produces both events)
* an option with ``harm > 0`` -> ``harm`` with that magnitude;
* a binding refusal -> ``refusal``;
* every deliberation round (round >= 1) -> ``social`` (the agent deliberated with the others).

Rewards are 0 unless ``value_rewards`` gives a weight per value: the binding choice then earns
the weights of the values it upholds minus those of the values it violates.

Files: ``dilemma_set.py`` (the dilemma set's data model and its file reader) and ``dilemma.py``
(``Params``, the env, a :class:`~valuegym.envs.deliberation.PanelEnv`, and PettingZoo's
``parallel_env`` / ``env`` / ``raw_env``).
"""
