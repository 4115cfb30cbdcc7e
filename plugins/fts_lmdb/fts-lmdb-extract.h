#ifndef FTS_LMDB_EXTRACT_H
#define FTS_LMDB_EXTRACT_H

#include "unichar.h"
#include "fts-lmdb-tokens.h"

struct mail;
struct fts_lmdb_settings;

/* Tokenize a message exactly as Dovecot's own SEARCH reads it (message
   parser, decoder, the user's normalizer, text parts only for the body),
   rather than what the fts plugin feeds backends (HTML without tags,
   addresses rewritten): that is what makes answers equal to stock.
   Stops early when *stop becomes TRUE. Returns -1 if the mail can't be
   read. */
int fts_lmdb_extract_mail(struct mail *mail,
			  const struct fts_lmdb_settings *set,
			  normalizer_func_t *normalizer,
			  fts_lmdb_token_callback_t *callback, void *context,
			  const bool *stop, const char **error_r);

#endif
