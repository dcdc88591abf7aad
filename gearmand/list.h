/* list: an intrusive circular doubly-linked list (the job queues, the
 * sleeping-worker lists, the client<->job links). Header-only. */
#ifndef GM_LIST_H
#define GM_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct gm_list {
    struct gm_list *next, *prev;
};

#define gm_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void gm_list_init(struct gm_list *l) { l->next = l->prev = l; }
static inline bool gm_list_empty(const struct gm_list *l) { return l->next == l; }
/* A node that was gm_list_init'ed or removed with gm_list_del is unlinked. */
static inline bool gm_list_linked(const struct gm_list *n) { return n->next != n; }

static inline void gm_list_insert_after(struct gm_list *pos, struct gm_list *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}
static inline void gm_list_add_tail(struct gm_list *l, struct gm_list *n) { gm_list_insert_after(l->prev, n); }
static inline void gm_list_add_head(struct gm_list *l, struct gm_list *n) { gm_list_insert_after(l, n); }
static inline void gm_list_del(struct gm_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

#define gm_list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define gm_list_for_each_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
