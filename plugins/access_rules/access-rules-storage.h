#ifndef ACCESS_RULES_STORAGE_H
#define ACCESS_RULES_STORAGE_H

void access_rules_mailbox_list_created(struct mailbox_list *list);
void access_rules_mailbox_allocated(struct mailbox *box);
void access_rules_mail_allocated(struct mail *mail);

#endif
