#!/usr/bin/env node
// The results tables are written by scripts/docs-tables.mjs, with every other table that cites a
// record; this name stays for scripts/bench-engines.sh. Usage: node scripts/results-table.mjs [--check]
import "./docs-tables.mjs";
