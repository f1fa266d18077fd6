"""``nci bench``: NCI and every baseline on the same test queries, in one run.

``nci bench --data DIR --index DIR --out DIR`` writes

- ``results.json``: ``{"dataset", "methods": {name: metrics and speed}, "speed": ratios, ...}``,
- ``results.md``: the same as a table, with the machine, commit and date,
- ``recall_vs_qps.png``: success@1 and success@10 against queries per second at batch 64,
- ``runs/<method>.trec``: every method's ranking of every test query.

What is measured, per method (queries are raw strings, so dense methods and NCI pay for their
query encoder, BM25 for its tokenizer):

- metrics (nci.evaluate) over all test queries, searched in batches of ``--batch-size``;
- ``qps_b64``: test queries / wall time of that full batched run;
- ``qps_b1``, ``p50_ms``, ``p99_ms``: one query at a time over a seeded sample of test queries;
- ``index_bytes``: bytes on disk of every file the method loads (encoder or model included);
- ``peak_rss_mb``: peak resident memory (VmHWM) of a fresh process that loads only this method
  and runs all of the above; ``added_rss_mb`` subtracts what that process held before loading.
  With ``--in-process`` methods share one process and the peak is reset between them (Linux
  ``clear_refs``), so the figures are the growth over what earlier methods left resident.

Speed ratios (``speed`` in results.json):

- ``decode_vs_generate_beam{B}``: the time of a reference constrained beam search that asks a
  Python trie for each beam's allowed tokens at every step and masks a full-vocabulary step in
  Python (what the NCI reference code does, and transformers' ``prefix_allowed_tokens_fn`` in
  GENRE and DSI code), divided by the time of our constrained decoding, with the same model,
  the same encoded queries and the same beam; their rankings must agree (the run fails if not).
- ``nci_vs_dense_qps_b1`` / ``_b64``: NCI's queries per second over dense exact's, end to end.

``nci bench ids`` benchmarks semantic id building instead (``nci.semantic_ids.bench_main``);
``nci bench scale`` measures build, load, memory, query and update costs on seeded synthetic
corpora of growing size (``nci.bench.scale``).

The modules: ``run`` (the config, measuring one method, the whole run), ``plan`` (which method
configurations are measured), ``reference`` (the reference decoder and the ranking comparison),
``report`` (results.md and the plot), ``machine`` (memory and machine facts), ``cli``; ``scale``,
``scale_measure`` and ``scale_report`` for ``nci bench scale``.
"""

from nci.bench.cli import add_arguments, main
from nci.bench.machine import machine_info, reset_peak_rss
from nci.bench.plan import method_plan
from nci.bench.reference import PythonTrie, decode_speed, rankings_agree, reference_beam_search
from nci.bench.report import AIMS, plot, results_markdown
from nci.bench.run import METRIC_KEYS, SPEED_KEYS, BenchConfig, measure_method, run_bench
from nci.bench.scale import ScaleConfig, run_scale

__all__ = [
    "AIMS",
    "METRIC_KEYS",
    "SPEED_KEYS",
    "BenchConfig",
    "ScaleConfig",
    "PythonTrie",
    "add_arguments",
    "decode_speed",
    "machine_info",
    "main",
    "measure_method",
    "method_plan",
    "plot",
    "rankings_agree",
    "reference_beam_search",
    "reset_peak_rss",
    "results_markdown",
    "run_bench",
    "run_scale",
]
