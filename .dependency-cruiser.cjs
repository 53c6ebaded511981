// The layout's one direction of flow (docs/ARCHITECTURE.md), checked by `npm run lint` and a test.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: "no-cycles", severity: "error", from: {}, to: { circular: true } },
    {
      name: "engines-never-import-runtime",
      comment: "engines/ (model math, package format, builder, native code) sits below the runtime",
      severity: "error",
      from: { path: "^engines/" },
      to: { path: "^runtime/" },
    },
    {
      name: "runtime-never-imports-the-builder",
      comment: "only the CLI may build (the default engine, `mamba-edge build`)",
      severity: "error",
      from: { path: "^runtime/", pathNot: "^runtime/cli/" },
      to: { path: "^engines/builder/" },
    },
    {
      name: "only-the-cli-imports-the-cli",
      comment: "the daemon, transports, scheduler and backends take what the CLI opened",
      severity: "error",
      from: { path: "^(runtime|engines)/", pathNot: "^runtime/cli/" },
      to: { path: "^runtime/cli/" },
    },
    {
      name: "transports-know-no-backend",
      severity: "error",
      from: { path: "^runtime/transports/" },
      to: { path: "^(runtime/backends|engines/)", pathNot: "^engines/errors\\.ts$" },
    },
    {
      name: "device-imports-nothing",
      severity: "error",
      from: { path: "^device/" },
      to: { path: "^(runtime|engines)/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(dist|node_modules|test/fixtures)/" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
  },
};
