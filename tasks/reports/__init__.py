"""Reports to findings: what each image's report says about each cxrsynth finding.

- ``sections``: the findings and impression of a report, cut into sentences.
- ``lexicon``: how reports name each finding (one lexicon for every backend).
- ``negation``: NegEx-style negation, hedging and pseudo-negation scopes.
- ``attributes``: side, zone and size or severity words around a mention.
- ``rules``: the rule-based parser (the offline default backend).
- ``radgraph_backend``: RadGraph from local weights, and its output converted to findings.
- ``backends``: the configured backend over many reports.
- ``records``: FindingState, how mentions combine, the long findings table.
- ``prompts``: canonical_prompt, the one prompt builder every stage uses.
- ``merge``: parsed and structured labels to the final manifest columns.
- ``evaluation``: precision and recall of "present", agreement, stage metrics.
- ``openi``: the Open-i reports and their MeSH labels, the real-text benchmark.
"""
