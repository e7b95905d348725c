/*
 * server.h - `heed serve`: the HTTP server (libmicrohttpd, one thread per
 * connection). It parses the serve flags, routes requests to the handlers
 * of api.c through the route table, and adds what HTTP needs around them:
 * API-key auth, CORS, the body limit, 404/405, and Server-Sent Events.
 * Routes, shapes and errors: docs/API.md.
 */
#ifndef HEED_SERVER_H
#define HEED_SERVER_H

#include <stddef.h>

#include "api.h"

/* Limits (flags and defaults in docs/API.md, "Limits"): connections in all
 * and per client address, a deadline for a request's headers and one for
 * its body (MHD's own timeout only catches silence, not a client that sends
 * one byte a second), the idle timeout, and a reserve of connections that
 * streams may not take, so health checks and reads still answer. */

typedef struct server server;

/* Runs `heed serve ARGS` (argv holds only the flags, without "serve") until
 * SIGINT or SIGTERM. Prints "heed: listening on http://HOST:PORT" to stdout
 * once it accepts connections. Returns the process exit status: 0 after a
 * clean shutdown, 1 when the model or the socket fails, 2 for bad flags. */
int server_main(int argc, char **argv);

/* A whole decimal number lo..hi (an option's value) into *out; false: not one. */
bool server_parse_count(const char *s, long lo, long hi, long *out);

/* One option of a command whose options all take a value (serve, mcp):
 * argv[*i] into *a and its value into *v, *i moved past it. 0; 1 after
 * printing usage for -h/--help; 2 after a message naming cmd when the
 * value is missing. */
int server_flag(int argc, char **argv, int *i, const char *cmd, const char *usage, const char **a, const char **v);

/* The run store's folder into dir: given (--data-dir), else
 * $XDG_DATA_HOME/heed, else ~/.local/share/heed; made with its parents.
 * 0, or -1 after a message on stderr naming cmd ("serve", "mcp"). */
int server_data_dir(const char *given, const char *cmd, char *dir, size_t size);

/* A server without sockets (tests, fuzzing): the same routing, auth, limits
 * and handlers as `heed serve`. api_key may be NULL. */
server *server_new_offline(api *a, const char *api_key);
void server_free_offline(server *s);
/* Handles one request as the server does once it has read it: method, url
 * path (no query), the Authorization header's value (or NULL), the query
 * arguments as name, value pairs, NULL-terminated (or NULL), the body. Fills
 * rp; a stream in rp->stream is the caller's to read with api_stream_read
 * and free with api_stream_free. */
void server_dispatch(server *s, const char *method, const char *url, const char *authorization,
                     const char *const *args, const char *body, size_t body_len, api_reply *rp);

#endif
