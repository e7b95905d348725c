/*
 * server.h - `heed serve`: the HTTP server (libmicrohttpd, one thread per
 * connection). It parses the serve flags, routes requests to the handlers
 * of api.c through the route table, and adds what HTTP needs around them:
 * API-key auth, CORS, the body limit, 404/405, and Server-Sent Events.
 * Routes, shapes and errors: docs/API.md.
 */
#ifndef HEED_SERVER_H
#define HEED_SERVER_H

/* Runs `heed serve ARGS` (argv holds only the flags, without "serve") until
 * SIGINT or SIGTERM. Prints "heed: listening on http://HOST:PORT" to stdout
 * once it accepts connections. Returns the process exit status: 0 after a
 * clean shutdown, 1 when the model or the socket fails, 2 for bad flags. */
int server_main(int argc, char **argv);

#endif
