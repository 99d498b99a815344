// The Restate peer of the geosaga benchmark: the common workload (WORKLOAD.md) as one
// handler. Every step is a ctx.run (durably journaled by the server); every 10th saga
// fails at notify with a TerminalError (not retried), and the catch block runs the
// compensations of the steps that succeeded, in reverse, each as a ctx.run too.
import * as restate from "@restatedev/restate-sdk";

const step = (name, seq) => ({ step: name, seq, id: `${name[0]}-${seq}`, ok: true });

const transfer = restate.service({
  name: "transfer",
  handlers: {
    run: async (ctx, req) => {
      const seq = req.seq;
      const undo = [];
      try {
        await ctx.run("debit", () => step("debit", seq));
        undo.push("undo debit");
        await ctx.run("credit", () => step("credit", seq));
        undo.push("undo credit");
        await ctx.run("notify", () => {
          if (seq % 10 === 0) {
            throw new restate.TerminalError(`saga ${seq}: the receiver refuses the notification`);
          }
          return step("notify", seq);
        });
        return { status: "completed" };
      } catch (e) {
        if (!(e instanceof restate.TerminalError)) {
          throw e;
        }
        for (const name of undo.reverse()) {
          await ctx.run(name, () => step(name, seq));
        }
        return { status: "compensated" };
      }
    },
  },
});

restate.serve({ services: [transfer], port: Number(process.env.PORT ?? 9080) });
