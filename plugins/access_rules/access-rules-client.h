#ifndef ACCESS_RULES_CLIENT_H
#define ACCESS_RULES_CLIENT_H

/* The protocol glue tells a refused client why, in its own protocol.
   Each part is active only inside its own binary (imap or pop3); in any
   other process its init does nothing. */
void access_rules_imap_init(void);
void access_rules_imap_deinit(void);
void access_rules_pop3_init(void);
void access_rules_pop3_deinit(void);

#endif
