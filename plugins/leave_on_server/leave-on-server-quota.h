#ifndef LEAVE_ON_SERVER_QUOTA_H
#define LEAVE_ON_SERVER_QUOTA_H

struct mail_user;

/* The quota plugin is loaded in this process. */
bool leave_on_server_quota_available(void);

/* How many bytes must go for the usage of every quota root of the user
   to be at most low_pct of its limit, if any root is above high_pct
   (0 if none is). Returns 0, or -1 with error_r. */
int leave_on_server_quota_excess(struct mail_user *user,
				 unsigned int high_pct, unsigned int low_pct,
				 uint64_t *excess_r, const char **error_r);

#endif
