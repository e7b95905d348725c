/*
 * webexport - `heed export RUN -o run.html`: one self-contained HTML file
 * that opens from disk with no server: the embedded web UI (its scripts and
 * styles inlined), the offline fetch shim (web/public/export-shim.js), and
 * the views of the run computed at export time (api_snapshot), not the
 * attention tensor itself.
 *
 * Part of the web layer: sees heed.h, the assets and the api snapshot.
 */
#ifndef HEED_WEBEXPORT_H
#define HEED_WEBEXPORT_H

#include <stddef.h>

#include "heed.h"

/* Default size budget for the computed views, in bytes of JSON. */
#define WEBEXPORT_BUDGET ((size_t)16 << 20)

/* Writes the viewer of run to path. model (may be NULL) labels candidates
 * and the logit lens. Returns 0, or -1 with a message in err. */
int webexport_html(heed_run *run, heed_model *model, const char *path, size_t budget, char *err, size_t err_size);
/* The same into an open stream (the server's download); -1 with err set. */
int webexport_html_stream(heed_run *run, heed_model *model, FILE *f, size_t budget, char *err, size_t err_size);

#endif
