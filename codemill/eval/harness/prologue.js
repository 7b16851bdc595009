// HumanEval-X JavaScript: what runs before the prompt. It freezes the objects a test compares with (the
// prototypes of Object, Array, String, ..., JSON, Math, console) and makes their global names unassignable,
// so no sample can swap JSON.stringify, console.assert or an Array method, nor add a toJSON to every array.
// (Error and its prototype stay as they are: node prints an uncaught error through them, and that output
// classes the outcome. Node's --frozen-intrinsics would freeze them too, and print "{}" instead.) The test calls __cm.assert (its console.assert calls, renamed), which counts and records failures; the
// test runs in a strict function of its own (no sample can reach it through `caller`, nor its names), and then
// __cm.finish reads the run's key from fd 3 and prints the proof of a pass:
// CODEMILL-PASS <assertions run> <HMAC-SHA256(key, "codemill-pass <n>")>.
const __cm = (() => {
  'use strict';
  const fs = require('fs');
  const crypto = require('crypto');
  const writeSync = fs.writeSync;
  const readFileSync = fs.readFileSync;
  const createHmac = crypto.createHmac;
  // A frozen prototype's data property cannot be shadowed by assignment either (`o.toString = f` fails: the
  // "override mistake"), which libraries do (js-md5 sets Md5.prototype.toString): the properties code
  // overrides become accessors that refuse a change of the prototype but define the property on anything else.
  const overridable = ['constructor', 'toString', 'valueOf', 'toLocaleString', 'toJSON', 'name', 'message'];
  const tame = (proto) => {
    const names = proto === Object.prototype ? Reflect.ownKeys(proto) : overridable;
    for (const name of names) {
      const desc = Object.getOwnPropertyDescriptor(proto, name);
      if (!desc || !('value' in desc) || !desc.configurable) {
        continue;
      }
      const value = desc.value;
      Object.defineProperty(proto, name, {
        get() { return value; },
        set(replacement) {
          if (this === proto) {
            throw new TypeError(`codemill: ${String(name)} of a built-in prototype cannot be changed`);
          }
          Object.defineProperty(this, name, { value: replacement, writable: true, enumerable: true,
            configurable: true });
        },
        enumerable: desc.enumerable,
        configurable: false,
      });
    }
  };
  const frozen = [Object, Array, String, Number, Boolean, Symbol, Map, Set, WeakMap, WeakSet, Date, RegExp,
    BigInt, Promise, Function, JSON, Math, Reflect, console];
  for (const value of frozen) {
    if (typeof value === 'function') {
      tame(value.prototype);
      Object.freeze(value.prototype);
    }
    Object.freeze(value);
  }
  for (const name of ['JSON', 'Math', 'Object', 'Array', 'String', 'Number', 'Boolean', 'Symbol', 'Map', 'Set',
    'WeakMap', 'WeakSet', 'Date', 'RegExp', 'Error', 'TypeError', 'RangeError', 'SyntaxError', 'ReferenceError',
    'Reflect', 'Proxy', 'Promise', 'BigInt', 'Function', 'parseInt', 'parseFloat', 'isNaN', 'isFinite',
    'console']) {
    Object.defineProperty(globalThis, name, { writable: false, configurable: false });
  }
  let count = 0;
  let failed = 0;
  return Object.freeze({
    assert(condition) {
      count += 1;
      if (!condition) {
        failed += 1;
        writeSync(2, 'Assertion failed\n');
      }
    },
    finish() {
      if (failed !== 0 || count === 0) {
        return;
      }
      let key;
      try {
        key = readFileSync(3);
      } catch (e) {
        return;
      }
      if (key.length === 0) {
        return;
      }
      const mac = createHmac('sha256', key).update(`codemill-pass ${count}`).digest('hex');
      writeSync(1, `\nCODEMILL-PASS ${count} ${mac}\n`);
    },
  });
})();
