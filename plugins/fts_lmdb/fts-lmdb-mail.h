#ifndef FTS_LMDB_MAIL_H
#define FTS_LMDB_MAIL_H

struct mail;

/* mail_allocated hook: partial fetches of indexed mail seek (see
   fts-lmdb-mail.c) unless fts_lmdb_partial_fetch = no. */
void fts_lmdb_mail_allocated(struct mail *mail);

#endif
