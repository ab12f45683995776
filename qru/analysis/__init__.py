"""The analysis of stored results, apart from drawing them (qru.views turns these numbers into figures, tables and
sentences; qru.metrics declares the metrics):

- qru.analysis.undone: the share of the forgetting that a perturbation undoes and the metric noise it is read
  against (paired standard errors, PrivLeak bootstrap, the metrics' floors);
- qru.analysis.verdicts: quantization vs the noise controls of the same size, per quantizer: "rounding back" or
  "fragility", where RTN starts to change the target, quantizers whose rounding moves the target itself;
- qru.analysis.grid: where a model's weights sit relative to a quantizer's grid ("on", "near", "not on");
- qru.analysis.findings: the numbers behind the Findings and the thresholds that grade them.
"""
