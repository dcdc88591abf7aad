/* plugins: the bundled c2s-iq plugins. Each registers its hooks and disco
 * features; djabberd.c calls them at start-up in chain order. */
#ifndef DJ_PLUGINS_H
#define DJ_PLUGINS_H

void dj_plugin_ping_register(void);         /* XEP-0199 */
void dj_plugin_version_register(void);      /* XEP-0092 */
void dj_plugin_vcard_register(void);        /* XEP-0054 vcard-temp, on the VCardGet/VCardSet chains */
void dj_plugin_vcard_update_register(void); /* XEP-0153 avatar hash in presence (AlterPresence) */

/* Helpers shared by the plugins (cmd_xmpp.c): the first element child and
 * its namespace; an empty result or an error reply to an IQ. */
struct dj_sess;
struct dj_stanza;
struct dj_node;
struct dj_node *dj_iq_payload(struct dj_stanza *st, const char **ns);
void dj_iq_result(struct dj_sess *s, struct dj_stanza *st, const char *payload);

#endif
