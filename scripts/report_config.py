"""The configuration this run used, defaults from the schema filled in, as a page for the report."""

import json

import yaml

from crosstrace.io import setup_logging
from crosstrace.report import html

log = setup_logging(snakemake.log[0])
# a JSON round trip makes shared default objects plain copies (no YAML anchors in the page)
text = yaml.safe_dump(json.loads(json.dumps(snakemake.params.config, default=str)), sort_keys=False, allow_unicode=True)
with open(snakemake.output[0], "w", encoding="utf-8") as f:
    f.write(html.page("Configuration used (schema defaults filled in)", [("", html.pre(text))]))
log.info("config:\n%s", text)
