#ifndef FTS_LMDB_MAIL_H
#define FTS_LMDB_MAIL_H

struct mail;

/* mail_allocated hook: partial fetches of indexed mail seek (see
   fts-lmdb-mail.c) unless fts_lmdb_partial_fetch = no. */
void fts_lmdb_mail_allocated(struct mail *mail);

/* Called by imap_fts_lmdb before IMAP opens BODY[section]<offset.n>:
   IMAP seeks such a slice of LF-stored mail by counting line ends from
   the section's start, unless its one-entry cache says where a nearer
   CRLF offset is. This fills that cache from the message's checkpoints,
   so the count starts at most a checkpoint's spacing before the slice. */
void fts_lmdb_mail_seek_hint(struct mail *mail, const char *section,
			     uoff_t virtual_offset);

#endif
