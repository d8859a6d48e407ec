"""The configuration this run used, defaults from the schema filled in, as a page for the report."""

import json

import yaml

from crosstrace.io import setup_logging
from crosstrace.report import html

log = setup_logging(snakemake.log[0])
# a JSON round trip makes shared default objects plain copies (no YAML anchors in the page)
text = yaml.safe_dump(json.loads(json.dumps(snakemake.params.config, default=str)), sort_keys=False, allow_unicode=True)
with open(snakemake.output[0], "w", encoding="utf-8") as f:
    left_out = ", ".join(f"{k}.{kk}" for k, v in snakemake.params.speed_only.items() for kk in v)
    note = html.note(f"Left out: {left_out}. They change speed only and rerun nothing when changed; "
                     "the values used are in the jobs' logs.")
    f.write(html.page("Configuration used (schema defaults filled in)", [("", html.pre(text)), ("", note)]))
log.info("config:\n%s", text)
