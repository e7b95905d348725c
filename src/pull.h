/*
 * pull.h - `heed pull ORG/REPO[:FILE]`: downloads a model (one GGUF file,
 * or the files of a Hugging Face checkpoint folder) from a Hugging
 * Face-compatible server into the cache, resuming and verifying; and
 * pull_resolve, which maps `-m ORG/REPO[:FILE]` to what was downloaded.
 *
 * The cache: $HEED_CACHE, else $XDG_CACHE_HOME/heed, else ~/.cache/heed;
 * a file of a repository lies at models/ORG/REPO/FILE. Nothing here
 * downloads implicitly: only `heed pull` reaches the network.
 *
 * Front ring (the CLI): sees heed.h only. No global state; pull_main is
 * for the main thread of the CLI (it calls curl_global_init).
 */
#ifndef HEED_PULL_H
#define HEED_PULL_H

#include <stddef.h>
#include <stdint.h>

/* `heed pull ARGS...` (argv without "heed pull"): 0 on success, 1 on a
 * runtime error (network, HTTP, disk, checksum), 2 on a usage error (a bad
 * spec, or a repository with several GGUF files and no :FILE). Errors are
 * one line on stderr starting "heed: pull: "; progress goes to stderr. */
int pull_main(int argc, char **argv);

/* Maps a -m value to the downloaded copy. Returns
 *    0  spec is not a repository name (NULL, an existing path, or not of
 *       the form ORG/REPO[:FILE]): path is untouched, use spec as it is;
 *    1  path holds the cached file (ORG/REPO:FILE, or the repository's one
 *       GGUF file) or the cached checkpoint folder (ORG/REPO);
 *   -1  err holds why not: "ORG/REPO is not downloaded: run heed pull
 *       ORG/REPO", several GGUF files to choose from, no cache folder.
 * Never touches the network. */
int pull_resolve(const char *spec, char *path, size_t size, char *err, size_t err_size);

/* SHA-256 (FIPS 180-4), what the Hub's checksums are. */
typedef struct pull_sha256 {
    uint32_t h[8];
    uint64_t n_bytes;   /* bytes hashed so far */
    uint8_t block[64];  /* the partial block, n_bytes % 64 bytes of it */
} pull_sha256;

void pull_sha256_init(pull_sha256 *s);
void pull_sha256_update(pull_sha256 *s, const void *data, size_t n);
void pull_sha256_final(pull_sha256 *s, uint8_t digest[32]);
/* The digest of data as 64 lowercase hex digits and a terminating 0. */
void pull_sha256_hex(const void *data, size_t n, char hex[65]);

#endif
