"""The Moral Machine: a panel of judges decides whose lives an autonomous car spares.

A PettingZoo ``ParallelEnv`` re-implementing the dilemmas of Awad et al. 2018 ("The Moral
Machine experiment", Nature 563:59-64) with the prompt wording of Takemoto 2024 (R. Soc. Open
Sci. 11:231393, repository ``kztakemoto/mmllm``).

A dilemma: a self-driving car with sudden brake failure either stays in its lane, killing the
group ahead, or swerves, killing the group in the other lane. Each group is pedestrians (on a
zebra crossing, maybe facing a green or red signal) or the car's passengers (when a concrete
barrier blocks one lane). The two groups differ in one *scenario dimension* (species, social
status, gender, age, fitness, number of characters) or are drawn at random.

Generator (Awad et al. 2018's design, as Takemoto 2024's code draws it). Each dilemma draws, independently and with the design's
probabilities: the scenario type; the two groups from that type's pool (pools are fixed tuples,
never sets); the layout (pedestrians on both lanes, or passengers behind a barrier ahead or in
the other lane); which group takes which place (a fair coin); the signals; and, **independently
of every attribute**, which of the two outcomes is presented first (a fair coin), fixing the
confound of Takemoto's generator where "Case 1" always killed the same kind of group (§9.1).
``design="awad"`` uses the probabilities implied by Awad's estimator weights; ``"balanced"``
Takemoto's fair coins and uniform dimensions; every table can be overridden.

Turn structure. An episode is ``dilemmas_per_episode`` dilemmas (default 13: one Moral Machine
session). Each dilemma takes ``1 + deliberation_rounds`` steps: every judge chooses; in each
deliberation round every judge sees the whole panel's choices of the previous round and chooses
again. Only the last round is binding: it produces the moral events and the ``responses`` rows.

Actions: ``Discrete(3)`` over :data:`CHOICES` ``case_1`` / ``case_2`` (the outcome described as
Case 1 / Case 2 happens: its group dies, the other is spared) / ``refuse``. Case numbers are
presentation positions: Case 1 is always the outcome presented first. ``step`` accepts the index,
the structured ``{"choice": ...}`` or ``{"text": "<raw reply>"}`` (parsed as Takemoto did,
:func:`parse_text_answer`). Invalid and refused decisions are recorded, never dropped.

Moral events (binding round only), in the shared vocabulary of ``envs/spec.py``:

* ``harm``: magnitude = lives lost (every character killed, pets included);
* ``transgression`` with values ``("-law",)`` when the chosen outcome kills pedestrians who
  were crossing on the green signal;
* ``transgression`` with values ``("-passenger_safety",)`` when it kills the car's passengers
  (the car turns on the people it carries);
* ``refusal`` for ``refuse``; an invalid decision chose nothing and produces no event.
* ``social`` in every deliberation round (the judge took part in the panel's deliberation).

Rewards are always 0: the Moral Machine has no right answer to reward.

Files, each read on its own: ``characters.py`` (the 20 characters and the pools, data),
``design.py`` (the design tables, data the analysis reads too), ``generator.py`` (drawing a
dilemma), ``wording.py`` (Takemoto's phrases and reply parser) and ``moral_machine.py``
(``Params``, the env, a :class:`~valuegym.envs.deliberation.PanelEnv`, and PettingZoo's
``parallel_env`` / ``env`` / ``raw_env``).
"""
