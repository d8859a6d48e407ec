# crosstrace: do the mechanisms a language model uses to recall facts from text carry over to speech?
# Table of contents only; the stages live in workflow/rules, the science in src/crosstrace.
import os
import sys

from snakemake.utils import min_version

# Jobs inherit these: idle OpenMP threads sleep rather than spin (see src/crosstrace/__init__.py); figures are
# drawn off-screen (the package itself never picks a matplotlib backend).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
# The workflow and its jobs import crosstrace from this checkout, also inside `--sdm conda` environments
# (envs/*.yaml hold only the dependencies).
_src = os.path.join(workflow.basedir, "src")
if _src not in sys.path:
    sys.path.insert(0, _src)
if _src not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [_src, os.environ.get("PYTHONPATH")])))
# The workflow itself imports the shard selection (crosstrace.shards: pandas only) from this checkout.
if _src not in sys.path:
    sys.path.insert(0, _src)

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/filter.smk"
include: "workflow/rules/trace.smk"
include: "workflow/rules/speech.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/screen.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/unit_view.smk"


rule all:
    input:
        all_targets(),
