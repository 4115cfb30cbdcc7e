#ifndef FTS_LMDB_USER_H
#define FTS_LMDB_USER_H

struct mail_user;

void fts_lmdb_mail_user_created(struct mail_user *user);

#endif
