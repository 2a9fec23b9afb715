"""``valuegym serve``: a local web app that shows runs live, replays episodes turn by turn and
gives a person a seat beside the agents (the ``human`` policy). See ``docs/app.md``."""
