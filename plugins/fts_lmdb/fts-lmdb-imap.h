#ifndef FTS_LMDB_IMAP_H
#define FTS_LMDB_IMAP_H

/* In the imap process: BODY[section]<offset.n> asks the mail for a seek
   hint first (fts_lmdb_mail_seek_hint). Elsewhere: nothing. */
void fts_lmdb_imap_init(void);
void fts_lmdb_imap_deinit(void);

#endif
