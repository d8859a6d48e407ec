"""The configuration this run used, defaults from the schema filled in, as a page for the report."""

import yaml

from crosstrace.io import setup_logging
from crosstrace.report import html

log = setup_logging(snakemake.log[0])
text = yaml.safe_dump(dict(snakemake.params.config), sort_keys=False, allow_unicode=True)
with open(snakemake.output[0], "w", encoding="utf-8") as f:
    f.write(html.page("Configuration used (schema defaults filled in)", [("", html.pre(text))]))
log.info("config:\n%s", text)
