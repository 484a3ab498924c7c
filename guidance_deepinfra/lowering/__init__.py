"""From guidance nodes to requests: JSON schemas prepared for DeepInfra and for checking (`schema`,
`schema_json`), the prompts that carry a schema (`prompts`), patterns DeepInfra can enforce server-side
(`pattern`) and tool-call arguments (`tool_args`)."""
