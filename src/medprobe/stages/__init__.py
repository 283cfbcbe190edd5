"""The stages of an experiment, one module each.

They run in this order by :func:`medprobe.experiment.run_experiment`:

1. :mod:`~medprobe.stages.data` -- ``load_data``: the data set, with a validation split and a test
   split that has every class;
2. :mod:`~medprobe.stages.extract` -- ``extract_backbone``: one backbone's features in the cache,
   its layers and the stack of each (:class:`~medprobe.stages.extract.ExtractedFeatures`);
3. :mod:`~medprobe.stages.probe` -- ``probe_backbone``: a probe per layer x (fraction, seed), the
   best layer of each stack selected on validation (:class:`~medprobe.stages.probe.ProbedBackbone`);
   :mod:`~medprobe.stages.protocols` -- ``probe_protocols`` -- runs it, the study's protocol
   (its recipes, its test-picked layer), or both on the same features;
4. :mod:`~medprobe.stages.statistics` -- ``score_run``: rows, comparisons and label efficiency from
   the pure functions of :mod:`medprobe.stats`;
5. :mod:`~medprobe.stages.outputs` -- ``write_outputs``: results.json, comparisons.json,
   predictions.parquet and run.json, into the folder it is given.

Each stage takes plain values (the run file's sections, the data set, the previous stage's result)
and returns a frozen result; none keeps state between calls.
"""
