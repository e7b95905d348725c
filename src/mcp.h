/*
 * mcp.h - `heed mcp`: a Model Context Protocol server over stdio, so an
 * agent (Claude Code, an IDE, any MCP client) can generate runs and read
 * their attention with tool calls instead of HTTP (docs/MCP.md).
 *
 * It speaks JSON-RPC 2.0, one message per line on stdin and stdout (MCP's
 * stdio transport): initialize, ping, tools/list and tools/call, with the
 * tools generate, attention_row, top_sources, list_runs, open_run and
 * ablate_compare. Every tool goes through the handlers of `heed serve`
 * (server_dispatch on an offline server: the same parameter checks, the same
 * run store and documents, the same views), so runs made here are listed by
 * `heed serve` on the same data folder and the other way round.
 *
 * What it does not do: HTTP, batches (answered -32600), server-to-client
 * requests, resources or prompts. Nothing but JSON-RPC messages goes to
 * stdout (the process's stdout is pointed at stderr while it runs, so a log
 * line from anywhere lands on stderr); logs go to stderr.
 *
 * Threads: requests are handled one at a time, in order, on the calling
 * thread; the server's engine thread runs the generations.
 */
#ifndef HEED_MCP_H
#define HEED_MCP_H

/* Runs `heed mcp ARGS` (argv holds only the flags, without "mcp") until
 * stdin ends. Returns the process exit status: 0 at the end of stdin, 1
 * when the model, the data folder or stdout fails, 2 for bad flags. */
int mcp_main(int argc, char **argv);

#endif
