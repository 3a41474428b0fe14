"""The classical heuristics of each problem, as policy objects the evaluator treats like
the network (``prepare``/``act``), with the searches that find their parameters."""
